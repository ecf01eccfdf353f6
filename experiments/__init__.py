"""Research experiments built on the product (agents, configs).

They import the product; nothing in agents/, launch/ or benchmarks/ imports
them, so an experiment can change or go without touching the Atari system.
"""
