"""The pure core: values and decisions, no I/O.

money (nano-USD), usage, windows, errors, policy, counters, attribution and
records are plain values; ``plan`` says which counters a call touches and
``decide`` what the policy does with the store's answer. Nothing here imports
from the rest of budgetguard.
"""
