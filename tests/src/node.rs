pub struct Cluster; pub struct Database; pub struct Node; pub struct NodeOptions; pub fn server_binary() {}
