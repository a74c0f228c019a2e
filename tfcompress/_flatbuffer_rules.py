"""What each TFLite operator requires of its inputs, outputs and options.

Tables for `tfcompress._flatbuffer_check`: what LiteRT's kernels and its
XNNPACK delegate assume without checking. Each row was found by a corrupted
file that crashed the interpreter (tests/test_fuzz.py) or is its neighbour.
"""

# Which inputs an operator may leave out (tensor index -1). Elsewhere a
# missing input is refused: the XNNPACK delegate dereferences it (a
# DEPTHWISE_CONV_2D whose filter index was flipped to -1 segfaults).
OPTIONAL_INPUTS = {
    "CONV_2D": {2},
    "CONV_3D": {2},
    "DEPTHWISE_CONV_2D": {2},
    "FULLY_CONNECTED": {2},
    "TRANSPOSE_CONV": {3},
    "CONV_3D_TRANSPOSE": {3},
    "SVDF": {3},
    "RESHAPE": {1},
}
# Operators whose optional inputs are many (peepholes, projections, layer
# norm, auxiliary inputs) or not known here: any input but the first.
MANY_OPTIONAL = frozenset(
    {
        "LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "BIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_RNN",
        "BIDIRECTIONAL_SEQUENCE_RNN",
        "RNN",
        "CUSTOM",
    }
)


# Options types whose names do not follow the operator's (CONV_2D: Conv2DOptions).
OPTIONS_OF = {
    **dict.fromkeys(("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"), "Pool2DOptions"),
    **dict.fromkeys(
        ("MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_ANY", "REDUCE_ALL"),
        "ReducerOptions",
    ),
    **dict.fromkeys(("MAXIMUM", "MINIMUM"), "MaximumMinimumOptions"),
    "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "CONV_3D_TRANSPOSE": "Conv3DOptions",
}
# Options values a kernel divides by, loops over or indexes with (a bit flip
# that zeroes SPLIT's num_splits segfaults the interpreter).
_STRIDES = {"StrideW": "positive", "StrideH": "positive"}
_DILATIONS = {"DilationWFactor": "positive", "DilationHFactor": "positive"}
OPTION_FIELDS = {
    "CONV_2D": {**_STRIDES, **_DILATIONS},
    "DEPTHWISE_CONV_2D": {**_STRIDES, **_DILATIONS},
    "TRANSPOSE_CONV": _STRIDES,
    **dict.fromkeys(
        ("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"),
        {**_STRIDES, "FilterWidth": "positive", "FilterHeight": "positive"},
    ),
    "SPLIT": {"NumSplits": "outputs"},
    "SPLIT_V": {"NumSplits": "outputs"},
    "PACK": {"ValuesCount": "inputs"},
    "UNPACK": {"Num": "outputs"},
    "WHILE": {"CondSubgraphIndex": "subgraph", "BodySubgraphIndex": "subgraph"},
    "IF": {"ThenSubgraphIndex": "subgraph", "ElseSubgraphIndex": "subgraph"},
    "CALL_ONCE": {"InitSubgraphIndex": "subgraph"},
}


# Operators whose first input and first output have one type (a float model
# or an int8 one end to end); a flipped index that feeds them a tensor of
# another type makes the kernel read past its buffer.
SAME_TYPE = frozenset(
    """ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE
    DIV ELU EXP EXPAND_DIMS FULLY_CONNECTED GELU HARD_SWISH L2_NORMALIZATION LEAKY_RELU LOG
    LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG PACK PAD PADV2 REDUCE_MAX
    REDUCE_MIN RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
    REVERSE_V2 RSQRT SLICE SOFTMAX SPACE_TO_DEPTH SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE
    STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK""".split()
)
# Of those, the ones whose second input is data of the same type too.
SAME_TYPE_BINARY = frozenset(
    "ADD DIV MAXIMUM MINIMUM MUL SQUARED_DIFFERENCE SUB".split()
)
