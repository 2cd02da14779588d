"""Kernel sensors: one stem per sensor (drops.bpf.c + drops.py, ...)."""
