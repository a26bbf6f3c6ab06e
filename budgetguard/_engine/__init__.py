"""The engine: one admission flow, frames, the guards, configuration and status.

Every procedure that talks to the store is written once, as a generator of
store operations (``stores/drive.py``), and driven by ``run`` (sync) or
``arun`` (async): ``flow`` admits a call, ``admission`` settles or releases
it, ``guard`` enters and leaves ``budget`` / ``spend_limit`` frames.
"""
