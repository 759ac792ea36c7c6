/// Moving between images and patch rows. Two orders exist in MAE and must not be
/// confused: the patch-embedding convolution's weight reads a patch in
/// (channel, row, column) order, while `patchify` (the loss target and the
/// prediction) lays it out as (row, column, channel), channel fastest.

/// output[batch, count, channels·patch·patch] = the patches `patchIndices[batch, count]`
/// of images[batch, channels, size, size], each flattened in (channel, row, column)
/// order, so that the patch embedding is one matrix product with the [D, C·p·p] weight.
/// Patch index = gridRow · grid + gridColumn.
public func gatherPatches(output: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
                          patchIndices: UnsafePointer<Int32>, batch: Int, count: Int,
                          channels: Int, imageSize: Int, patchSize: Int) {
    let grid = imageSize / patchSize
    let patchDimension = channels * patchSize * patchSize
    parallelFor(batch * count, minimumPerWorker: 16) { range in
        for item in range {
            let sample = item / count
            let patch = Int(patchIndices[item])
            let top = (patch / grid) * patchSize, left = (patch % grid) * patchSize
            var destination = output + item * patchDimension
            for channel in 0..<channels {
                let plane = images + (sample * channels + channel) * imageSize * imageSize
                for row in 0..<patchSize {
                    destination.update(from: plane + (top + row) * imageSize + left, count: patchSize)
                    destination += patchSize
                }
            }
        }
    }
}

/// output[batch, grid·grid, patch·patch·channels] = patchify(images[batch, channels, size, size]),
/// each patch in (row, column, channel) order as the official `patchify`.
public func patchify(output: UnsafeMutablePointer<Float>, images: UnsafePointer<Float>,
                     batch: Int, channels: Int, imageSize: Int, patchSize: Int) {
    let grid = imageSize / patchSize
    let patchCount = grid * grid
    let patchDimension = channels * patchSize * patchSize
    parallelFor(batch * patchCount, minimumPerWorker: 16) { range in
        for item in range {
            let sample = item / patchCount, patch = item % patchCount
            let top = (patch / grid) * patchSize, left = (patch % grid) * patchSize
            let destination = output + item * patchDimension
            for row in 0..<patchSize {
                for column in 0..<patchSize {
                    for channel in 0..<channels {
                        let source = ((sample * channels + channel) * imageSize + top + row) * imageSize + left + column
                        destination[(row * patchSize + column) * channels + channel] = images[source]
                    }
                }
            }
        }
    }
}

/// The inverse of `patchify`: images[batch, channels, size, size] from patches[batch, grid·grid, p·p·channels].
public func unpatchify(images: UnsafeMutablePointer<Float>, patches: UnsafePointer<Float>,
                       batch: Int, channels: Int, imageSize: Int, patchSize: Int) {
    let grid = imageSize / patchSize
    let patchCount = grid * grid
    let patchDimension = channels * patchSize * patchSize
    parallelFor(batch * patchCount, minimumPerWorker: 16) { range in
        for item in range {
            let sample = item / patchCount, patch = item % patchCount
            let top = (patch / grid) * patchSize, left = (patch % grid) * patchSize
            let source = patches + item * patchDimension
            for row in 0..<patchSize {
                for column in 0..<patchSize {
                    for channel in 0..<channels {
                        let destination = ((sample * channels + channel) * imageSize + top + row) * imageSize + left + column
                        images[destination] = source[(row * patchSize + column) * channels + channel]
                    }
                }
            }
        }
    }
}
