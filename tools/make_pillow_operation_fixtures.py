"""Writes Tests/DataTests/PillowOperationsReference.swift: timm 0.3.2's RandAugment
operations (timm.data.auto_augment, which call Pillow) on two fixed 13x11 RGB patterns with
fixed arguments, as the fine-tuning transform calls them (fillcolor = round(255 * ImageNet
mean), resample = BICUBIC). The Swift operations must reproduce these bytes.

    /work/torchvenv/bin/python tools/make_pillow_operation_fixtures.py
"""
import os
import PIL
from PIL import Image
import timm
from timm.data import auto_augment as aa

WIDTH, HEIGHT = 13, 11
KWARGS = dict(fillcolor=(124, 116, 104), resample=Image.BICUBIC)


def pattern(low_contrast):
    # Same formulas as testPattern / lowContrastPattern in Tests/DataTests/TestSupport.swift.
    data = bytearray()
    for y in range(HEIGHT):
        for x in range(WIDTH):
            for c in range(3):
                v = (x * 37 + y * 91 + c * 53 + (x * y) % 17 * 7) % 256
                data.append(60 + v % 97 + c * 9 if low_contrast else v)
    return Image.frombytes("RGB", (WIDTH, HEIGHT), bytes(data))


CASES = [
    ("AutoContrast", 0.0, lambda im, a: aa.auto_contrast(im)),
    ("Equalize", 0.0, lambda im, a: aa.equalize(im)),
    ("Invert", 0.0, lambda im, a: aa.invert(im)),
    ("Posterize", 1, lambda im, a: aa.posterize(im, int(a))),
    ("Posterize", 3, lambda im, a: aa.posterize(im, int(a))),
    ("Posterize", 4, lambda im, a: aa.posterize(im, int(a))),
    ("Solarize", 26, lambda im, a: aa.solarize(im, int(a))),
    ("Solarize", 128, lambda im, a: aa.solarize(im, int(a))),
    ("SolarizeAdd", 99, lambda im, a: aa.solarize_add(im, int(a))),
    ("Color", 0.19, lambda im, a: aa.color(im, a)),
    ("Color", 1.81, lambda im, a: aa.color(im, a)),
    ("Contrast", 0.19, lambda im, a: aa.contrast(im, a)),
    ("Contrast", 1.855, lambda im, a: aa.contrast(im, a)),
    ("Brightness", 0.145, lambda im, a: aa.brightness(im, a)),
    ("Brightness", 1.81, lambda im, a: aa.brightness(im, a)),
    ("Sharpness", 0.19, lambda im, a: aa.sharpness(im, a)),
    ("Sharpness", 1.87, lambda im, a: aa.sharpness(im, a)),
    ("Rotate", 27.0, lambda im, a: aa.rotate(im, a, **KWARGS)),
    ("Rotate", -28.35, lambda im, a: aa.rotate(im, a, **KWARGS)),
    ("ShearX", 0.27, lambda im, a: aa.shear_x(im, a, **KWARGS)),
    ("ShearY", -0.285, lambda im, a: aa.shear_y(im, a, **KWARGS)),
    ("TranslateXRel", 0.405, lambda im, a: aa.translate_x_rel(im, a, **KWARGS)),
    ("TranslateYRel", -0.3825, lambda im, a: aa.translate_y_rel(im, a, **KWARGS)),
]


def swift_bytes(values):
    lines = []
    for start in range(0, len(values), 24):
        lines.append("            " + ", ".join(str(v) for v in values[start:start + 24]) + ",")
    return "\n".join(lines)


def main():
    out = [
        f"/// Reference outputs of timm {timm.__version__}'s RandAugment operations with Pillow {PIL.__version__}",
        "/// on `testPattern(width: 13, height: 11)` and `lowContrastPattern(width: 13, height: 11)`,",
        "/// made by tools/make_pillow_operation_fixtures.py; the Swift operations must reproduce them.",
        "struct PillowOperationCase {",
        "    let operation: String",
        "    let argument: Double",
        "    let lowContrast: Bool",
        "    let bytes: [UInt8]",
        "}",
        "",
        "let pillowOperationCases: [PillowOperationCase] = [",
    ]
    for low in (False, True):
        for name, argument, function in CASES:
            result = function(pattern(low), argument)
            assert result.size == (WIDTH, HEIGHT) and result.mode == "RGB"
            out.append(f"    PillowOperationCase(operation: \"{name}\", argument: {argument!r}, lowContrast: {str(low).lower()}, bytes: [")
            out.append(swift_bytes(list(result.tobytes())))
            out.append("        ]),")
    out.append("]")
    path = os.path.join(os.path.dirname(__file__), "..", "Tests", "DataTests", "PillowOperationsReference.swift")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
