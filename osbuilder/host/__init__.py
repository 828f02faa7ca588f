"""The host's side: its runtime, container manager and kernel configurations, the findings
check reports, and the runtime-configuration fragment that matches an artifact."""
