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


@pytest.mark.parametrize("given", [["A"], "A", ("A", "x"), {"A"}])
def test_symmetric_given_names_not_a_mapping_shows_the_mapping_meant(given):
    with pytest.raises(DeclarationError, match=r"symmetric= must map tensor names to 'full' or a list of mode "
                                               r"groups, e.g. symmetric=\{'A': 'full'\}; got"):
        sg.compile("y[i] += A[i,j]*x[j]", symmetric=given)


@pytest.mark.parametrize("given", [["A"], "csr"])
def test_formats_given_names_not_a_mapping_shows_the_mapping_meant(given):
    with pytest.raises(DeclarationError, match=r"formats= must map tensor names to one of 'dense', 'coo', 'csr', "
                                               r"'csf', e.g. formats=\{'A': 'coo'\}; got"):
        sg.compile("y[i] += A[i,j]*x[j]", formats=given)


@pytest.mark.parametrize(("spec", "pattern"), [
    ([(0, 1.5)], r"group \(0, 1.5\) holds 1.5, which is not a mode number"),  # int(1.5) was taken as 1
    ([(0, True)], r"group \(0, True\) holds True, which is not a mode number"),
    ([(0, "x")], r"group \(0, 'x'\) holds 'x', which is not a mode number"),
    ([0, (1, 2)], r"0 is not a group of modes"),
    ({0: 1}, r"expected 'full' or a list of mode groups"),
])
def test_bad_mode_groups_are_refused_naming_the_tensor(spec, pattern):
    with pytest.raises(DeclarationError, match=r"symmetric 'A': " + pattern):
        sg.compile("y[i] += A[i,j,k]*x[j]", symmetric={"A": spec})


def test_mode_groups_accept_numpy_integers_and_a_flat_group():
    import numpy as np

    k = sg.compile("y[i] += A[i,j,k]*x[j]", symmetric={"A": (np.int64(0), np.int64(1))})
    assert k.program.groups_of("A") == ((0, 1),)
    with pytest.raises(DeclarationError, match="keys are tensor names"):
        sg.compile("y[i] += A[i,j]*x[j]", symmetric={1: "full"})


# ------------------------------------------------------------------------------- systec-gpu explain


def test_cli_explain_parse_error_prints_the_caret_and_exits_2(capsys):
    from systec_gpu.cli import main

    assert main(["explain", "y[i] += A[i,j * x[j]"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "systec-gpu explain: expected ']', found '*' at position 14:\n"
        "  y[i] += A[i,j * x[j]\n"
        "                ^\n"
    )


@pytest.mark.parametrize(("option", "groups"), [
    (["--symmetric", "A"], "symmetric A: (0, 1, 2)"),
    (["--symmetric", "A=full"], "symmetric A: (0, 1, 2)"),
    (["--symmetric", "A=0,1"], "symmetric A: (0, 1)\n"),
    (["--symmetric", "A=1, 2"], "symmetric A: (1, 2)\n"),
])
def test_cli_explain_symmetric_forms(capsys, option, groups):
    from systec_gpu.cli import main

    assert main(["explain", "y[i] += A[i,j,k]*x[j]*x[k]", *option]) == 0
    assert groups in capsys.readouterr().out


@pytest.mark.parametrize(("option", "pattern"), [
    (["--symmetric", "A=foo"], "'foo' is neither 'full' nor a group of two or more 0-based modes"),
    (["--symmetric", "A=0"], "'0' is neither 'full' nor a group"),
    (["--symmetric", "=full"], "expected a tensor name"),
    (["--symmetric", "A", "--symmetric", "A=0,1"], "'full' and other declarations of A cannot be combined"),
])
def test_cli_explain_rejects_unknown_symmetric_forms(capsys, option, pattern):
    from systec_gpu.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["explain", "y[i] += A[i,j,k]*x[j]*x[k]", *option])
    assert exit_.value.code == 2
    assert pattern in capsys.readouterr().err


def test_cli_explain_declaration_error_names_the_tensor(capsys):
    from systec_gpu.cli import main

    assert main(["explain", "y[i] += A[i,j]*x[j]", "--symmetric", "B"]) == 2
    assert "symmetric= names 'B', which the expression does not use" in capsys.readouterr().err


def test_cli_explain_groups_of_one_tensor_combine(capsys):
    from systec_gpu.cli import main

    assert main(["explain", "y[i] += A[i,j,k,l]*x[j]", "--symmetric", "A=0,1", "--symmetric", "A=2,3"]) == 0
    assert "symmetric A: (0, 1), (2, 3)" in capsys.readouterr().out
