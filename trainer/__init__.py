"""Composer student training: streamed datasets, distillation losses and schedules, the recipe.

Imports nothing heavy at package import; see trainer/train.py for the recipe and trainer/cli.py
for `pdistill train`.
"""
