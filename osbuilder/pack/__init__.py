"""Packers: turn a guest tree into an artifact without modifying the tree."""
