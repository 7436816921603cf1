"""AMQP 0-9-1 for Warren: sans-IO protocol machines over pamqp, and one asyncio server."""
