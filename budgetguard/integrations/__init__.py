"""Framework adapters (LangChain, pydantic-ai, LiteLLM).

Each adapter is its own module and imports its framework only when that
module is imported: ``import budgetguard`` never needs a framework.
"""
