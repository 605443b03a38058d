"""siyu's engine: events in, actions out; journeys, scheduler, policy, commands."""
