"""Tuning on the target: the CPU tuner (cpu.py) and the tuning database (db.py) shared by the tuners."""
