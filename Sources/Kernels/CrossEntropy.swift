#if canImport(Glibc)
import Glibc
#endif

/// Cross-entropy of logits [rows, classes] against hard labels (PyTorch's
/// `CrossEntropyLoss()`, mean over the rows): loss_i = logsumexp(z_i) − z_i[label_i].
/// With `gradient` (rows × classes floats), assigns d(mean loss)/dz × `gradientScale`:
/// (softmax(z_i) − onehot(label_i)) · scale / rows. Each row is one worker's in double
/// precision; the mean adds the rows in order, so the result is thread-count independent.
public func crossEntropyHardLabels(logits: UnsafePointer<Float>, labels: [Int], rows: Int, classes: Int,
                                   gradient: UnsafeMutablePointer<Float>? = nil, gradientScale: Float = 1,
                                   rowLosses: UnsafeMutablePointer<Double>? = nil) -> Double {
    precondition(labels.count == rows && rows > 0, "one label per row")
    let losses = UnsafeMutablePointer<Double>.allocate(capacity: rows)
    defer { losses.deallocate() }
    parallelFor(rows, minimumPerWorker: max(1, 2_048 / max(classes, 1))) { range in
        for row in range {
            let z = logits + row * classes
            var largest = Double(z[0])
            for index in 1..<classes { largest = max(largest, Double(z[index])) }
            var total = 0.0
            for index in 0..<classes { total += exp(Double(z[index]) - largest) }
            let logSum = largest + log(total)
            losses[row] = logSum - Double(z[labels[row]])
            if let gradient {
                let scale = Double(gradientScale) / Double(rows)
                let g = gradient + row * classes
                for index in 0..<classes {
                    let probability = exp(Double(z[index]) - logSum)
                    g[index] = Float((probability - (index == labels[row] ? 1 : 0)) * scale)
                }
            }
        }
    }
    var sum = 0.0
    for row in 0..<rows {
        sum += losses[row]
        rowLosses?[row] = losses[row]
    }
    return sum / Double(rows)
}

/// The place of `label` among row `row`'s logits, 0 for the largest (top-k correct when
/// below k); of equal logits the lower class ranks first, so the answer is deterministic.
public func labelRank(logits: UnsafePointer<Float>, row: Int, classes: Int, label: Int) -> Int {
    let z = logits + row * classes
    let target = z[label]
    var rank = 0
    for index in 0..<classes where z[index] > target || (z[index] == target && index < label) { rank += 1 }
    return rank
}
