extension TrainingSession {
    /// Loads `--init-weights` into the model of a fresh run (rank 0; `restore` broadcasts it
    /// to the other ranks, as it does a fresh initialisation). The weights must be of the
    /// run's model; encoder-only weights become whole through `mae import` first.
    func startFromWeights(_ path: String) throws {
        guard let model else { return }  // WorkerOptions allows --init-weights for pretraining only
        let trained = try TrainedModel.load(path: path, model: config.model)
        model.parameters.pointer.update(from: trained.model.parameters.pointer, count: model.parameters.count)
        model.parametersDidChange()
        log.info("starting from the weights of \(trained.weightsPath)")
    }
}
