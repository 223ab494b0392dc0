"""LoRA aggregation for lorakit clients on Flower: strategies (numpy, float64) and a ServerApp."""
