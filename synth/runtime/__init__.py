"""The agent runtime: the one agent loop (`agent`), the protocol (`protocol`) and its profiles
(`profile`, with the data folders `profiles/` and `prompts/`), chat policies (`policy`), managed
model servers and `EndpointError` (`endpoint`), the endpoint preflight (`preflight`), request-level
resume (`request_cache`), the shared HTTP retry wait (`retry`) and the event loop (`aio`)."""
