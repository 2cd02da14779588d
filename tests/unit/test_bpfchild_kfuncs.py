"""bpfchild.link_kfuncs: placeholder helper calls made kfunc calls, nothing else touched."""

import struct

from netagent.bpfchild import link_kfuncs


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


CALL, LD_IMM64, EXIT, MOV64_IMM = 0x85, 0x18, 0x95, 0xB7


def test_a_placeholder_call_becomes_a_kfunc_call_by_btf_id():
    program = (insn(MOV64_IMM, dst=2, imm=2472) + insn(CALL, imm=0x6E61) + insn(CALL, imm=1)
               + insn(LD_IMM64, dst=1, src=1, imm=7) + insn(0) + insn(CALL, imm=0x6E61) + insn(EXIT))
    linked = link_kfuncs(program, {str(0x6E61): 65504})
    assert linked == (insn(MOV64_IMM, dst=2, imm=2472) + insn(CALL, src=2, imm=65504) + insn(CALL, imm=1)
                      + insn(LD_IMM64, dst=1, src=1, imm=7) + insn(0) + insn(CALL, src=2, imm=65504)
                      + insn(EXIT))


def test_without_kfuncs_the_program_is_unchanged():
    program = insn(CALL, imm=0x6E61) + insn(EXIT)
    assert link_kfuncs(program, {}) == program
    # a call that already names something else (a kfunc, a BPF-to-BPF call) is not a placeholder
    other = insn(CALL, src=1, imm=0x6E61) + insn(EXIT)
    assert link_kfuncs(other, {str(0x6E61): 65504}) == other
