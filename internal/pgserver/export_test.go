package pgserver

// RemoveStaleServers runs the sweep of servers whose owner has gone.
var RemoveStaleServers = removeStaleServers
