"""The AMQP 1.0 front: sessions and links over the protocol-neutral session core."""
