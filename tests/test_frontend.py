import pytest

import systec_gpu as sg
from systec_gpu.frontend import ParseError, parse
from systec_gpu.frontend.declare import DeclarationError
from systec_gpu.ir.einsum import Access, Call, Index, Literal, format_einsum


def test_parse_mttkrp_structure():
    einsum = parse("C[i,j] += A[i,k,l]*B[l,j]*B[k,j]")
    assert einsum.output == Access("C", (Index("i"), Index("j")))
    assert einsum.reduce == "+="
    assert isinstance(einsum.rhs, Call) and einsum.rhs.op == "mul" and len(einsum.rhs.args) == 3


def test_parse_precedence_scalars_and_min():
    einsum = parse("y[] min= min(A[i,j] + x[j], 2.5) + z[]")
    assert einsum.output == Access("y", ())
    assert format_einsum(einsum) == "y[] min= min(A[i,j] + x[j], 2.5) + z[]"
    product = parse("y[i] += A[i,j] * (x[j] + 1)").rhs
    assert product.args[1] == Call("add", (Access("x", (Index("j"),)), Literal(1.0)))


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("y[i] += A[i,j * x[j]", 14, "expected ']'"),
        ("y[i] = A[i,j]", 5, "unknown reduction: expected one of +=, min=, max="),
        ("y[i] sum= A[i,j]", 5, "unknown reduction"),
        ("y[i] += A[i,j] x[j]", 15, "expected an operator"),
        ("y[i] += $", 8, "unexpected character"),
        ("y[i] += ", 8, "expected a tensor access"),
    ],
)
def test_syntax_errors_name_position_and_reason(text, position, reason):
    with pytest.raises(ParseError) as error:
        parse(text)
    assert error.value.position == position
    assert reason in str(error.value)
    assert "^" in str(error.value)


def test_output_index_absent_from_inputs():
    with pytest.raises(DeclarationError, match="output index k of y\\[i,k\\] appears in no input"):
        sg.compile("y[i,k] += A[i,j]*x[j]")


def test_tensor_used_with_two_arities():
    with pytest.raises(DeclarationError, match="A is used with 2 and with 3 indices"):
        sg.compile("y[i] += A[i,j]*A[i,j,k]")


def test_symmetric_group_out_of_range_and_unknown_tensor():
    with pytest.raises(DeclarationError, match="mode 2 of group \\(0, 2\\) is out of range"):
        sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": [(0, 2)]})
    with pytest.raises(DeclarationError, match="names 'Z', which the expression does not use"):
        sg.compile("y[i] += A[i,j]*x[j]", symmetric={"Z": "full"})


def test_unknown_format_and_backend():
    with pytest.raises(DeclarationError, match="unknown format"):
        sg.compile("y[i] += A[i,j]*x[j]", formats={"A": "bsr"})
    with pytest.raises(ValueError, match="unknown backend"):
        sg.compile("y[i] += A[i,j]*x[j]", backend="cuda")


def test_symmetric_sizes_checked_at_call():
    import numpy as np

    k = sg.compile("y[i] += A[i,j]*x[j]", symmetric={"A": "full"}, formats={"A": "dense"})
    with pytest.raises(ValueError, match="declared symmetric in modes \\(0, 1\\) but has shape \\(3, 4\\)"):
        k(A=np.zeros((3, 4)), x=np.zeros(4))
