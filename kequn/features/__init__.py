"""Features: per-customer measures computed from the canonical tables (RFM first).

Each feature is one Ibis expression over the store, so it runs in whichever engine holds
the data; results that must be compared over time are stored as tables keyed by as_of.
The public functions are re-exported from :mod:`kequn`; ``kequn.features.rfm`` is the
module (nothing is re-exported here, so the module name is not shadowed by the function).
"""
