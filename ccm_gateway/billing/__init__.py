"""Billing: the price table, costs, budgets and the usage ledger (see docs/architecture.md).

The stage that uses them is ``ccm_gateway.middleware.billing.BillingMiddleware``.
"""
