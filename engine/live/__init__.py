"""Live trading: the runner (MQTT in, FIX out, recovery from its journal), the journal itself, paper
sessions against a local exchange simulator, and tick-lag statistics."""
