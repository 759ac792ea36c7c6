import Data

/// How the current epoch's samples are split among the workers, and what follows from it
/// for the steps, the data loader and the schedule.
///
/// After k micro-batches of B on each of W workers, the workers together have taken exactly
/// the positions 0..<k·B·W of the epoch's permutation (`DistributedSampler`), so a run
/// resumed with another world size W' inside an epoch splits the rest of the epoch from
/// there: its split starts at the samples taken so far, after the steps done so far, at the
/// share of the epoch done so far. An epoch that was not resized starts at 0 after no step,
/// and everything below is then what it always was.
struct EpochSplit: Equatable {
    /// Positions of the epoch's permutation taken before this world size took over.
    var start: Int
    /// The epoch's optimizer steps done before that.
    var firstStep: Int
    /// The share of the epoch done before that (the schedule's fractional epoch, 0..<1).
    var startFraction: Double
    /// Each worker's micro-batches in the split (full ones only, as drop_last).
    var batchesPerWorker: Int
    /// Images of one micro-batch over all workers: batch × world size.
    var samplesPerBatch: Int
    var accumulationSteps: Int

    /// The split of `datasetCount` samples among `worldSize` workers from position `start` on:
    /// each gets ceil((count − start) / worldSize) samples (`DistributedSampler.samplesPerRank(from:)`),
    /// cut into full batches as the loader does.
    init(datasetCount: Int, worldSize: Int, batchSize: Int, accumulationSteps: Int, start: Int = 0, firstStep: Int = 0,
         startFraction: Double = 0) {
        self.start = start
        self.firstStep = firstStep
        self.startFraction = startFraction
        batchesPerWorker = DistributedSampler.samplesPerRank(datasetCount: datasetCount, worldSize: worldSize, from: start)
            / batchSize
        samplesPerBatch = batchSize * worldSize
        self.accumulationSteps = accumulationSteps
    }

    /// The epoch's optimizer steps in all: those before the split, and the split's. Trailing
    /// micro-batches that cannot fill an accumulation group are not used.
    var stepCount: Int { firstStep + batchesPerWorker / accumulationSteps }

    /// The samples the whole epoch takes: those before the split, and the split's micro-batches.
    var epochSamples: Int { start + batchesPerWorker * samplesPerBatch }

    /// The split's micro-batch that optimizer step `stepInEpoch` begins with (for `DataLoader.startEpoch`).
    func firstBatch(ofStep stepInEpoch: Int) -> Int { (stepInEpoch - firstStep) * accumulationSteps }

    /// Positions of the epoch's permutation taken before optimizer step `stepInEpoch` (and
    /// before micro-batch `micro` of it).
    func samplesDone(beforeStep stepInEpoch: Int, micro: Int = 0) -> Int {
        start + (firstBatch(ofStep: stepInEpoch) + micro) * samplesPerBatch
    }

    /// The share of the epoch done once `samplesDone` positions are taken: from `startFraction`
    /// at the split's start to 1 at the epoch's end, in proportion to the samples. For an epoch
    /// not resized that is samplesDone / epochSamples, which is the reference's iteration /
    /// iterations per epoch bit for bit (the same ratio of integers, divided with one rounding);
    /// after a resize it goes on from where the epoch stood, so the rate and TensorBoard's axis
    /// neither jump nor go back.
    func fraction(samplesDone: Int) -> Double {
        guard epochSamples > start else { return 1 }   // a split that fills no batch: the epoch ends here
        return startFraction + Double(samplesDone - start) / Double(epochSamples - start) * (1 - startFraction)
    }
}
