// The benchmark guest of `cargo xtask bench` (xtask/src/guest_bench.rs holds its
// words; check them with llvm-mc -triple=aarch64 -show-encoding bench.s). It runs
// in linux-a of QEMU virt: under -icount shift=0 each CNTVCT tick is 16 executed
// instructions (1 ns per instruction, 62.5 MHz counter), so every figure is an
// instruction count, the hypervisor's included. It prints, on its own PL011
// (UART1, direct-mapped: QEMU transmits what is written to UARTDR), one line per
// figure: a tag letter and the count of ticks in hex:
//   e  CNTVCT at its second instruction (hypervisor entry to guest entry)
//   l  4096 iterations of an empty loop (subs + b.ne)
//   t  the same with a 32-bit read of its trapped virtio transport (0x0a003e00)
//   d  the same with a 32-bit read of its direct PL011's UARTFR (0x09040018)
//   h  the same with PSCI_VERSION through HVC (plus the two instructions that
//      load the function ID)
// then powers off.
    .text
_start:
    b       entry
    .long   0
    .quad   0                 // text_offset
    .quad   0x1000            // image_size
    .quad   0xa               // flags: little-endian, 4 KiB pages, anywhere
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0
entry:
    mrs     x19, cntvct_el0
    movz    x1, #0x0904, lsl #16
    movz    x4, #0x3e00
    movk    x4, #0x0a00, lsl #16
    movz    x5, #0x0018
    movk    x5, #0x0904, lsl #16
    mov     x20, #4096
    mov     w0, #'e'
    mov     x8, x19
    bl      report

    isb
    mrs     x10, cntvct_el0
    mov     x9, x20
1:  subs    x9, x9, #1
    b.ne    1b
    isb
    mrs     x11, cntvct_el0
    sub     x8, x11, x10
    mov     w0, #'l'
    bl      report

    isb
    mrs     x10, cntvct_el0
    mov     x9, x20
2:  ldr     w3, [x4]
    subs    x9, x9, #1
    b.ne    2b
    isb
    mrs     x11, cntvct_el0
    sub     x8, x11, x10
    mov     w0, #'t'
    bl      report

    isb
    mrs     x10, cntvct_el0
    mov     x9, x20
3:  ldr     w3, [x5]
    subs    x9, x9, #1
    b.ne    3b
    isb
    mrs     x11, cntvct_el0
    sub     x8, x11, x10
    mov     w0, #'d'
    bl      report

    isb
    mrs     x10, cntvct_el0
    mov     x9, x20
4:  movz    w0, #0x0000
    movk    w0, #0x8400, lsl #16
    hvc     #0
    subs    x9, x9, #1
    b.ne    4b
    isb
    mrs     x11, cntvct_el0
    sub     x8, x11, x10
    mov     w0, #'h'
    bl      report

    movz    w0, #0x0008
    movk    w0, #0x8400, lsl #16
    hvc     #0
6:  b       6b

// Prints w0 (a tag letter), x8 in 16 hex digits and a newline on the UART at x1.
report:
    strb    w0, [x1]
    mov     x3, #60
5:  lsr     x2, x8, x3
    and     x2, x2, #0xf
    add     x6, x2, #0x30
    add     x7, x2, #0x57
    cmp     x2, #10
    csel    x2, x6, x7, lo
    strb    w2, [x1]
    subs    x3, x3, #4
    b.ge    5b
    mov     w2, #0x0a
    strb    w2, [x1]
    ret
