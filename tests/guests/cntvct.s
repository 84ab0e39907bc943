// /bin/cntvct of the Linux demo's initramfs (xtask/src/cntvct.rs): prints the
// virtual counter CNTVCT_EL0 in decimal and a newline on stdout, and exits 0. Linux
// lets EL0 read it (CNTKCTL_EL1.EL0VCTEN: the vDSO reads it too). The digits are
// written downwards from the stack pointer, in the stack Linux set up.
//
// Assemble with `llvm-mc -triple=aarch64 -show-encoding`; xtask/src/cntvct.rs
// holds the words and wraps them in an ELF header.
    .text
    .globl _start
_start:
    mrs     x1, cntvct_el0          // the value to print
    mov     x2, sp                  // the digits end here
    mov     x3, x2                  // x3: the first character so far
    mov     w4, #'\n'
    strb    w4, [x3, #-1]!
    mov     x5, #10
1:  udiv    x6, x1, x5              // x6 = x1 / 10
    msub    x7, x6, x5, x1          // x7 = x1 - x6 * 10: the lowest digit
    add     w7, w7, #'0'
    strb    w7, [x3, #-1]!
    mov     x1, x6
    cbnz    x1, 1b
    mov     x0, #1                  // write(stdout, x3, x2 - x3)
    mov     x1, x3
    sub     x2, x2, x3
    mov     x8, #64                 // __NR_write (include/uapi/asm-generic/unistd.h)
    svc     #0
    mov     x0, #0                  // exit(0)
    mov     x8, #93                 // __NR_exit
    svc     #0
