"""The pull-through cache: repositories here that mirror upstream registries (routing.py), the rules
of serving and refreshing them (pull_through.py), single-flight fetches (fetches.py), the upstream
client (upstream.py), batched pull times (usage.py) and eviction by size (eviction.py)."""
