"""The course's Flower App: the ``ServerApp`` and ``ClientApp`` that ``flwr run`` loads (see ``pyproject.toml``).

``lora_leak_lib.flower.run_flower`` launches it; each Flower process reads the job file its run config names.
Needs Flower (``pip install -e ".[flower]"``); nothing else in the library imports this package.
"""
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .. import flower

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    flower.serve(grid, context)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    return flower.client_app_for(context.run_config)(message, context)
