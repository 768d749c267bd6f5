from elearn import SparkTFJob


class ReturnsList(SparkTFJob):
    def pre_train(self, spark):
        return [1, 2, 3]

    def train(self, ctx):
        pass
