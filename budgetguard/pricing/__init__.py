"""Prices and token estimates: model -> integer rates, request -> worst-case tokens.

``book.PriceBook`` resolves a model's rates (user overrides, genai-prices,
a fallback) once and caches them; ``rates.ModelRates`` prices a usage with
integers only; ``tokens`` counts a request's input before it is sent.
Pure and I/O-free: genai-prices data ships in its wheel.
"""
