from elearn import SparkTFJob


class First(SparkTFJob):
    def train(self, ctx):
        pass


class Second(SparkTFJob):
    def train(self, ctx):
        pass
