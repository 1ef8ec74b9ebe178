import com.sun.tools.attach.VirtualMachine;

/**
 * Loads a native agent into a running JVM: {@code LoadAgent <pid> <library> <options>}. What
 * {@code jcmd <pid> JVMTI.agent_load} does, except that the options reach the agent whole (jcmd's
 * argument parser splits them at the first {@code =}). fleetstream's bench uses it to start and stop
 * async-profiler in the lake's JVM.
 */
public final class LoadAgent {
  private LoadAgent() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: LoadAgent <pid> <library> <options>");
      System.exit(2);
    }
    VirtualMachine vm = VirtualMachine.attach(args[0]);
    try {
      vm.loadAgentPath(args[1], args[2]);
    } finally {
      vm.detach();
    }
  }
}
