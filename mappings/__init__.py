"""Declarative weight-mapping rule files, one per architecture family (package data)."""
