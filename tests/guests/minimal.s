// The minimal test guest of tests/tests/guests.rs (which encodes it word by word):
// read its own virtio-mmio transport's MagicValue, print Y or N, read the
// neighbour's (which must abort into VBAR_EL1 + 0x200 and print A), power off.
// OWN_LOW / NEIGHBOUR_LOW: the low halves of the two transports' addresses.
// With them substituted (0x3e00 and 0x3c00 for linux-a), check the encodings with
// llvm-mc -triple=aarch64 -show-encoding minimal.s. The test adds one instruction
// per address (MOVZ + MOVK for x1 too), so its offsets differ from this listing.
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
    adr     x7, vectors
    msr     vbar_el1, x7
    isb
    movz    x1, #0x0900, lsl #16
    movz    x4, #OWN_LOW
    movk    x4, #0x0a00, lsl #16
    ldr     w3, [x4]
    movz    w5, #0x6976
    movk    w5, #0x7472, lsl #16
    cmp     w3, w5
    mov     w2, #'N'
    mov     w6, #'Y'
    csel    w2, w6, w2, eq
    strb    w2, [x1]
    movz    x4, #NEIGHBOUR_LOW
    movk    x4, #0x0a00, lsl #16
    ldr     w3, [x4]
    mov     w2, #'X'
    strb    w2, [x1]
    b       off
    .balign 0x800
vectors:
    .skip   0x200
    mov     w2, #'A'
    strb    w2, [x1]
off:
    mov     w2, #0x0a
    strb    w2, [x1]
    movz    w0, #0x0008
    movk    w0, #0x8400, lsl #16
    hvc     #0
1:  b       1b
