"""Provider adapters and ``instrument()``.

``base`` defines what an adapter is; one module per wire format
(``openai_chat``, ``openai_responses``, ``anthropic``) implements it;
``registry.ADAPTERS`` lists them. ``calls``, ``streams`` and ``instrument``
are the shell that puts the engine around the SDK methods the adapters name.
"""
