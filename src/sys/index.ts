/** src/sys: the system call layer. The only code in luokit that touches koffi. */
export * from './errno.js';
export * from './error.js';
export * from './fd.js';
export * from './file.js';
export * from './ioctl.js';
export * from './kexec.js';
export * from './memfd.js';
export * from './mm.js';
export * from './proc.js';
export * from './socket.js';
export * from './unix-socket.js';
