agent_routes: list[object] = []
