"""Kits for test suites of code built on loa (adapter packages): they need pytest and anyio."""
