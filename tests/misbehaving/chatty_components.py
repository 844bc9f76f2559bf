"""A component module that prints when imported."""

print("chatty: components imported")


class Chatty:
    def encode(self, media):
        return media
