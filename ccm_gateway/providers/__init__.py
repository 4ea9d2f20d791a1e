"""Upstream providers: kinds and presets, the aiohttp clients, the in-process mock."""
