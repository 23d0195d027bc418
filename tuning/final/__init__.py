"""final"""
