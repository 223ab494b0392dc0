"""Placeholder ClientApp: lorakit clients (`lorakit fl-client`) speak the Fleet API themselves and run no Python.

A Flower app must name a ClientApp; a Python SuperNode joining this federation by mistake gets a clear error.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    raise RuntimeError("this federation's clients are lorakit nodes: run `lorakit fl-client --superlink URL`")
