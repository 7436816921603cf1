"""AMQP 1.0: SASL, the proton engine as a sans-IO server, addresses and messages."""
