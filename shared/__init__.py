"""Switchboard's framework-free core. Nothing in this package imports azure.functions."""
