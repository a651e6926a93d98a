"""A service of your own, in a few lines: run it with `procorch up -c examples/greeter.toml`.

procorch call Greeter greet '{"name": "Ada"}'
procorch call Greeter greet_user '{"user_id": 1}'
"""

from procorch.services import NotFound, Service, action


class Greeter(Service):
    @action("greet")
    def greet(self, data: dict) -> dict:
        return {"greeting": f"Hello, {data.get('name', 'world')}!"}

    @action("greet_user")
    def greet_user(self, data: dict) -> dict:
        """Calls another service: the client finds UserService through the registry."""
        reply = self.client.call("UserService", "validate_user", {"user_id": data.get("user_id")})
        if not reply["valid"]:
            raise NotFound(f"user {data.get('user_id')} does not exist")
        return {"greeting": f"Hello, {reply['user']['username']}!"}
