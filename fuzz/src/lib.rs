//! What the fuzz targets share.

/// Makes a stack overflow a crash libFuzzer reports and saves, as it does a panic.
///
/// On its own, libFuzzer's SIGSEGV handler runs on the stack that just overflowed, so the
/// process dies without a word and the input is lost. libFuzzer keeps a SIGSEGV handler that
/// was installed before it (AddressSanitizer's, usually) and calls it on its alternate stack;
/// this installs one, on a stack of its own, that turns the fault into an abort, which
/// libFuzzer's SIGABRT handler reports and saves (`crash-…` in the artifacts directory). Call
/// it from the target's `init`, which runs before libFuzzer installs its handlers.
pub fn report_stack_overflows() {
    /// Room for libFuzzer's crash handler (it formats, writes the input and prints stats).
    const SIGNAL_STACK: usize = 1024 * 1024;
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIGNAL_STACK].into_boxed_slice());
    let alternate = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: SIGNAL_STACK,
    };
    // SAFETY: the stack is leaked, so it outlives every signal; the action is fully initialized
    // (zeroed, then its handler and flags set) and its handler only calls async-signal-safe
    // functions.
    unsafe {
        assert_eq!(libc::sigaltstack(&alternate, std::ptr::null_mut()), 0);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_segv as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()),
            0
        );
    }
}

extern "C" fn on_segv(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let message = b"\n==fuzz== SIGSEGV, most likely a stack overflow: aborting to save the input\n";
    // SAFETY: write(2) and abort(3) are async-signal-safe.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::abort();
    }
}
