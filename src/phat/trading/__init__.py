"""Trading: signal sources and their binding (fail closed to the proxy), the reference policy, and the backtest."""
