"""The long-running side: the scheduler service and one care run (recover, plan, deliver or queue)."""
