"""Bundled benchmarks: a fast mock upstream, a bare proxy to compare against, a load generator and
a runner that measures the gateway beside both in one run (``make bench``)."""
