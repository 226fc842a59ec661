/*
 * luokit's QEMU test guest: a 512-byte boot sector that proves a VM kept
 * running across a host live update.
 *
 * At boot it prints a banner and fills 448 KiB of RAM (0x10000-0x7ffff)
 * with a pattern. Then, forever, each time bit 24 of the TSC moves on
 * (a few ms), it adds one to a counter kept in RAM, sums the pattern
 * region, and prints one line to COM1:
 *
 *   N=<counter> T=<tsc> R=<hhmmss> K=<sum>
 *
 * all in hex but R (the CMOS clock, BCD, driven by the host's clock).
 * A guest that continued prints N one higher than the line before, the
 * same K, and no banner; the TSC stops while the VM is stopped and the
 * CMOS clock does not, so the guest's own clocks tell how long it was
 * paused (src/qemu/counter-serial.ts reads them).
 */
	.code16
	.text
	.globl	_start
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %ss
	mov	$0x7c00, %sp
	cld
	mov	$banner, %si
	call	puts
	/* Fill: dword i of the region holds i * 2654435761 + 12345. */
	movl	$12345, %eax
	mov	$0x1000, %bx
1:	mov	%bx, %es
	xor	%di, %di
2:	movl	%eax, %es:(%di)
	addl	$2654435761, %eax
	add	$4, %di
	jnz	2b
	add	$0x1000, %bx
	cmp	$0x8000, %bx
	jne	1b
	movl	$0, counter
	rdtsc
	mov	%dx, lasttick

loop:
	/* Wait for TSC bit 24 to change: a few ms of guest time. */
1:	rdtsc
	movl	%eax, %ecx
	shrl	$24, %ecx
	shll	$8, %edx
	orl	%edx, %ecx
	cmp	lasttick, %cx
	je	1b
	mov	%cx, lasttick
	incl	counter
	/* Sum the region. */
	xorl	%esi, %esi
	mov	$0x1000, %bx
2:	mov	%bx, %es
	xor	%di, %di
3:	addl	%es:(%di), %esi
	add	$4, %di
	jnz	3b
	add	$0x1000, %bx
	cmp	$0x8000, %bx
	jne	2b
	movl	%esi, sum
	/* N= */
	mov	$'N', %al
	call	label
	movl	counter, %eax
	call	hex32
	/* T= (the whole TSC) */
	mov	$'T', %al
	call	label
	rdtsc
	push	%eax
	movl	%edx, %eax
	call	hex32
	pop	%eax
	call	hex32
	/* R= hhmmss from the CMOS clock, once no update is in progress */
	mov	$'R', %al
	call	label
4:	mov	$0x0a, %al
	out	%al, $0x70
	in	$0x71, %al
	test	$0x80, %al
	jnz	4b
	mov	$4, %al
	call	cmos
	mov	$2, %al
	call	cmos
	mov	$0, %al
	call	cmos
	/* K= */
	mov	$'K', %al
	call	label
	movl	sum, %eax
	call	hex32
	mov	$crlf, %si
	call	puts
	jmp	loop

/* " X=" (no space before N) */
label:
	cmp	$'N', %al
	je	1f
	push	%ax
	mov	$' ', %al
	call	putc
	pop	%ax
1:	call	putc
	mov	$'=', %al
	jmp	putc

/* CMOS register %al, a BCD byte, printed as two digits. */
cmos:
	out	%al, $0x70
	in	$0x71, %al
	jmp	hex8

hex32:
	mov	$8, %cx
1:	roll	$4, %eax
	push	%ax
	and	$0x0f, %al
	call	nibble
	pop	%ax
	loop	1b
	ret

hex8:
	push	%ax
	shr	$4, %al
	call	nibble
	pop	%ax
	and	$0x0f, %al
nibble:
	add	$'0', %al
	cmp	$'9', %al
	jbe	putc
	add	$('a' - '9' - 1), %al
putc:
	push	%dx
	push	%ax
	mov	$0x3fd, %dx
1:	in	%dx, %al
	test	$0x20, %al
	jz	1b
	pop	%ax
	mov	$0x3f8, %dx
	out	%al, %dx
	pop	%dx
	ret

puts:
	lodsb
	test	%al, %al
	jz	1f
	call	putc
	jmp	puts
1:	ret

banner:	.asciz	"luokit counter guest: booted\r\n"
crlf:	.asciz	"\r\n"

	.org	0x1fe
	.byte	0x55, 0xaa

	.bss
counter:	.long	0
sum:		.long	0
lasttick:	.word	0
