class NotAJob:
    def train(self, ctx):
        pass
