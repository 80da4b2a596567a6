"""Money and the spend store: pricing, periods, budgets and admission, and the storage backends."""
